"""Audio features of the paper (section 4.2): 32 MFCC + delta + delta-delta per 10 ms frame.

Constants and pure functions only, in the spirit of whisper/audio.py.
"""

SAMPLE_RATE = 16000  # every waveform inside ser_demo is float32 mono at this rate

"""The words-consistency term of the training loss (`--consistency W`): words that carry no emotion
(an acted script, a neutral sentence paired with any class) should not move the voice's answer.
On those samples the prediction with the words is pulled towards the same model's prediction from
the audio alone; `--consistency-trains` chooses which weights may learn from that pull."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ser_demo.model import MSCNN_SPU_ATT
from train.pairing import CONSISTENCY_TRAINS, BimodalSample


def words_consistency(model: MSCNN_SPU_ATT, inputs: dict, out, samples: Sequence[BimodalSample],
                      trains: str = "all") -> torch.Tensor:
    """Sum over the samples whose words carry no label of KL(p(audio alone) || p(audio + words)),
    divided by the batch size. The target is the same model's answer without the words, from the
    very audio statistics of this pass (same masks), without dropout and without gradient.
    What learns from it (`trains`, one of CONSISTENCY_TRAINS): "all": the whole model, through this
    pass's own prediction; "fusion": p(audio + words) recomputed from the detached audio
    statistics, so the words and the layers after the fusion; "words": recomputed with every weight
    that the answer from the audio alone depends on detached, so only the words' side learns."""
    if trains not in CONSISTENCY_TRAINS:
        raise ValueError(f"trains must be one of {CONSISTENCY_TRAINS}, not {trains!r}")
    rows = [i for i, s in enumerate(samples) if s.audio_path is not None and s.text and not s.text_carries_label]
    if not rows or not (model.config.use_audio and model.config.use_text):
        return out.logits.new_zeros(())
    rows = torch.tensor(rows, device=out.logits.device)
    voice = {"audio_statistics": out.audio_statistics[rows].detach(), "words": inputs["words"][rows]}
    if "speaker" in inputs:
        voice["speaker"] = inputs["speaker"][rows]
    was_training = model.training
    with torch.no_grad():
        model.eval()
        alone = model(**voice, word_lengths=torch.zeros_like(inputs["word_lengths"][rows])).logits
        model.train(was_training)
    with_words = {**voice, "word_lengths": inputs["word_lengths"][rows]}
    if trains == "all":
        fused = out.logits[rows]
    elif trains == "fusion":
        fused = model(**with_words).logits
    else:
        fused = torch.func.functional_call(model, _words_side_only(model, voice), args=(), kwargs=with_words).logits
    return F.kl_div(fused.float().log_softmax(-1), alone.float().log_softmax(-1),
                    log_target=True, reduction="sum") / len(samples)


def _words_side_only(model: MSCNN_SPU_ATT, voice: dict) -> dict[str, torch.Tensor]:
    """The model's weights, with those that its answer from the audio alone depends on detached.
    Without words every text feature is zero, so that answer reads the audio branch, the first
    classifier layer's columns for the audio statistics and speaker embedding (first in the fused
    vector), its bias, and the later layers. What stays trainable: the text CNN, the attention and
    the first layer's columns for the text features."""
    first = next(name for name, m in model.classifier.named_modules() if isinstance(m, torch.nn.Linear))
    n_voice = voice["audio_statistics"][0].numel() + (voice["speaker"].shape[-1] if "speaker" in voice else 0)
    weights = {}
    for name, p in model.named_parameters():
        if name == f"classifier.{first}.weight":
            p = torch.cat([p[:, :n_voice].detach(), p[:, n_voice:]], dim=1)
        elif not name.startswith(("text_cnn.", "attention.")):  # the audio branch and the classifier
            p = p.detach()
        weights[name] = p
    return weights

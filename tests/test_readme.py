"""The README is also the Hugging Face Space's configuration: its front matter must stay valid."""

from pathlib import Path

from huggingface_hub import metadata_load

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_front_matter_configures_a_gradio_space():
    meta = metadata_load(README)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert (README.parent / meta["app_file"]).is_file()
    assert str(meta["python_version"]).startswith("3.11")
    assert meta["license"] and meta["models"]
    assert len(meta["short_description"]) <= 60  # Spaces refuses longer ones
    import gradio

    assert meta["sdk_version"] == gradio.__version__  # the Space runs what CI tested

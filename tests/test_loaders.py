import pytest

from crossmodal.inputs.loaders import discover
from tests.harness import png_bytes


def _folder(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.jpg", "extra.webp"):
        (tmp_path / "images" / name).write_bytes(png_bytes())
    (tmp_path / "captions.csv").write_text("image,caption,owner\na.png,a red square,alice\n"
                                           "a.png,red box,alice\nb.jpg,a blue thing,bob\n")
    (tmp_path / "texts.csv").write_text("text,owner\nI like circles,carol\n")
    (tmp_path / "notes.txt").write_text("first line\n\nsecond line\n")
    return tmp_path


def test_folder_with_captions_texts_and_loose_images(tmp_path):
    sources = {s.id: s for s in discover(_folder(tmp_path), default_owner="dave")}
    assert sources["images/a.png"].owner == "alice" and sources["images/a.png"].modality == "image"
    assert sources["images/a.png#caption2"].text == "red box"
    assert sources["images/b.jpg#caption1"].owner == "bob"
    assert sources["images/extra.webp"].owner == "dave", "images no table names get the default owner"
    assert sources["texts.csv:2"].text == "I like circles" and sources["texts.csv:2"].owner == "carol"
    assert sources["notes.txt:3"].text == "second line" and "notes.txt:2" not in sources
    assert len(sources) == 9


def test_ids_are_stable_across_runs(tmp_path):
    folder = _folder(tmp_path)
    assert [s.id for s in discover(folder)] == [s.id for s in discover(folder)]


def test_flickr8k_layout(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "1000.jpg").write_bytes(png_bytes())
    table = tmp_path / "captions.txt"
    table.write_text("image,caption\n1000.jpg,A child in a pink dress .\n1000.jpg,A girl going into a building .\n")
    sources = discover(table, default_owner="flickr")
    assert [s.modality for s in sources] == ["image", "text", "text"]
    assert sources[0].path == tmp_path / "Images" / "1000.jpg"
    assert sources[0].to_doc().blob == png_bytes()


@pytest.mark.parametrize("caption", ["红" * 9000, "😀" * 5000, "\\" * 9999])
def test_a_long_caption_never_fails_its_image_on_tags(tmp_path, caption):
    """The caption is copied into its image's tags for display: 9,000 CJK characters (under
    max_text_chars) were 54 kB of escaped JSON, over max_tags_bytes, and failed the image."""
    from crossmodal.api.validate import tags_error

    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "captions.csv").write_text(f"image,caption\na.png,{caption}\n", encoding="utf-8")
    by_id = {s.id: s for s in discover(tmp_path)}
    shown = by_id["a.png"].tags["caption"]
    assert tags_error(by_id["a.png"].tags) is None and caption.startswith(shown[:-1]) and shown.endswith("…")
    assert by_id["a.png#caption1"].text == caption  # the caption itself is indexed whole

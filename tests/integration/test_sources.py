"""ExpandInputs on the FnApiRunner (globs, URLs, every manifest format) and check_inputs errors."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from beam_caption.errors import ConfigError
from beam_caption.inputs.sources import ExpandInputs, ImageRef, check_inputs, normalize_pattern

URL = "https://images.example.org/cat.jpg"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """top.jpg, a/x.jpg, a/b/y.jpg, a/b/c/z.png and a non-image notes.txt."""
    for relative in ("top.jpg", "a/x.jpg", "a/b/y.jpg", "a/b/c/z.png", "notes.txt"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8" + relative.encode())
    return tmp_path


def refs(root: Path, *relative: str) -> list[ImageRef]:
    """The refs a listing gives: each with the size and time that identify the file's version."""
    return [ImageRef(str(root / r), size=(root / r).stat().st_size,
                     modified=(root / r).stat().st_mtime) for r in relative]


def run(cases: dict[str, tuple[ExpandInputs, list[ImageRef]]]) -> None:
    """Apply each ExpandInputs in one FnApiRunner pipeline and assert its exact output."""
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        for label, (transform, expected) in cases.items():
            assert_that(pipeline | label >> transform, equal_to(expected), label=f"Check{label}")


def test_globs_urls_and_directories(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    run({
        # Relative patterns work (Beam's local filesystem alone matches nothing for '*.jpg').
        "Star": (ExpandInputs(["*.jpg"]), refs(tree, "top.jpg")),
        # '**' crosses directories, '*' does not.
        "DoubleStar": (ExpandInputs([f"{tree}/**.jpg"]),
                       refs(tree, "top.jpg", "a/x.jpg", "a/b/y.jpg")),
        # '**/' means zero or more directories, as in a shell: the top level is included.
        "StarStarSlash": (ExpandInputs([f"{tree}/**/*.jpg"]),
                          refs(tree, "top.jpg", "a/x.jpg", "a/b/y.jpg")),
        "Nested": (ExpandInputs([f"{tree}/a/*/*"]), refs(tree, "a/b/y.jpg")),
        # A directory (with or without a trailing slash) means everything under it.
        "Directory": (ExpandInputs(["a/b"]), refs(tree, "a/b/y.jpg", "a/b/c/z.png")),
        "Slash": (ExpandInputs(["a/b/c/"]), refs(tree, "a/b/c/z.png")),
        # URLs pass through; identical URIs are kept (dedupe is by content, later).
        "Mixed": (ExpandInputs([URL, "top.jpg", "top.jpg"]),
                  [ImageRef(URL), *refs(tree, "top.jpg", "top.jpg")]),
    })


def test_manifests_of_every_format(tree: Path, tmp_path_factory: pytest.TempPathFactory,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = tree / "lists"
    manifests.mkdir()
    (manifests / "m.txt").write_text(
        f"# a comment\n\n../top.jpg\n  ../a/x.jpg  \n{tree}/a/b/y.jpg\n{URL}\n", encoding="utf-8"
    )
    (manifests / "m.csv").write_text(
        "\ufeffuri,id,prompt\n../top.jpg,1,Count the cats.\n../a/x.jpg,,\n", encoding="utf-8"
    )
    (manifests / "m.jsonl").write_text(
        json.dumps({"uri": "../top.jpg", "id": 7}) + "\n\n"
        + json.dumps({"uri": URL, "prompt": "Is it a cat?"}) + "\n"
        + json.dumps({"uri": ""}) + "\n",  # names no image: a problem ref (an error row)
        encoding="utf-8",
    )
    table = pa.table({"uri": ["../a/b/c/z.png", "gs://bucket/p.jpg"], "id": [1, 2]})
    pq.write_table(table, manifests / "m.parquet")
    # Relative entries resolve against the manifest's directory, not the working directory.
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    top, x, y, z = (str(tree / r) for r in ("top.jpg", "a/x.jpg", "a/b/y.jpg", "a/b/c/z.png"))
    run({
        "Txt": (ExpandInputs([], manifest=str(manifests / "m.txt")),
                [ImageRef(top), ImageRef(x), ImageRef(y), ImageRef(URL)]),
        "Csv": (ExpandInputs([], manifest=str(manifests / "m.csv")),
                [ImageRef(top, "1", "Count the cats."), ImageRef(x)]),
        "Jsonl": (ExpandInputs([], manifest=str(manifests / "m.jsonl")),
                  [ImageRef(top, "7"), ImageRef(URL, None, "Is it a cat?"),
                   ImageRef(str(manifests / "m.jsonl"),
                            problem="the row's uri is empty: {'uri': ''}")]),
        "Parquet": (ExpandInputs([], manifest=str(manifests / "m.parquet")),
                    [ImageRef(z, "1"), ImageRef("gs://bucket/p.jpg", "2")]),
        # A glob's refs carry the listing's size and time; a manifest's do not.
        "InputsAndManifest": (ExpandInputs([f"{tree}/a/*.jpg"], manifest=str(manifests / "m.csv")),
                              [*refs(tree, "a/x.jpg"), ImageRef(top, "1", "Count the cats."),
                               ImageRef(x)]),
    })


def test_the_last_step_is_a_reshuffle_unless_the_caller_shuffles(tree: Path) -> None:
    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = pipeline | "Expand" >> ExpandInputs([str(tree / "top.jpg"), URL])
    _ = pipeline | "Unshuffled" >> ExpandInputs([str(tree / "top.jpg"), URL], reshuffle=False)
    assert "Expand/Reshuffle" in pipeline.applied_labels
    assert not any(label.startswith("Unshuffled/Reshuffle") for label in pipeline.applied_labels)


def test_check_inputs_accepts_good_inputs(tree: Path) -> None:
    (tree / "m.txt").write_text("top.jpg\n", encoding="utf-8")
    check_inputs([f"{tree}/**.jpg", URL, "https://unreachable.invalid/x.jpg"], str(tree / "m.txt"))
    check_inputs([], str(tree / "m.txt"))
    check_inputs([str(tree / "a")], None)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("m.csv", "path,id\nx.jpg,1\n", "no 'uri' column"),
    ("m.jsonl", '{"path": "x.jpg"}\n', r"first row names no image \(the line has no 'uri' key"),
    ("m.jsonl", "not json\n", r"first row names no image \(the line is not valid JSON"),
    ("m.csv", 'uri,prompt\nx.jpg,"two\nlines"\n', "line 2 has a quoted line break"),
    ("m.csv", "bucket,size\nb,1\n", "no 'uri' column"),
    ("m.txt", "# only a comment\n\n", "lists no images"),
    ("m.yaml", "- x.jpg\n", "unknown extension"),
])
def test_check_inputs_rejects_bad_manifests(tmp_path: Path, name: str, content: str,
                                            message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        check_inputs([], str(tmp_path / name))
    assert "\n" not in str(caught.value)


def test_check_inputs_rejects_a_parquet_manifest_without_uri(tmp_path: Path) -> None:
    pq.write_table(pa.table({"path": ["x.jpg"]}), tmp_path / "m.parquet")
    with pytest.raises(ConfigError, match="no 'uri' column"):
        check_inputs([], str(tmp_path / "m.parquet"))


def test_check_inputs_rejects_missing_things(tree: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--input 'nothing/\*\.jpg' matched no files$"):
        check_inputs(["nothing/*.jpg"], None)
    with pytest.raises(ConfigError, match="matched no files"):
        check_inputs([f"{tree}/**.gif"], None)
    with pytest.raises(ConfigError, match="does not exist"):
        check_inputs([], str(tree / "missing.csv"))
    with pytest.raises(ConfigError, match="no input"):
        check_inputs([], None)
    with pytest.raises(ConfigError, match="no input"):
        ExpandInputs([])
    with pytest.raises(ConfigError, match="unknown extension"):
        ExpandInputs([], manifest="list.xlsx")


def test_normalize_pattern(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    assert normalize_pattern("*.jpg") == f"{tree}/*.jpg"
    assert normalize_pattern("a") == f"{tree}/a/**"
    assert normalize_pattern("gs://bucket/photos/") == "gs://bucket/photos/**"
    assert normalize_pattern("gs://bucket/**.jpg") == "gs://bucket/**.jpg"


def test_a_file_or_folder_whose_name_holds_glob_characters_is_itself(tmp_path: Path) -> None:
    trip = tmp_path / "Trip [Italy]"
    for relative in ("a.jpg", "why?.jpg", "b*.jpg"):
        (trip / relative).parent.mkdir(parents=True, exist_ok=True)
        (trip / relative).write_bytes(b"\xff\xd8" + relative.encode())
    (tmp_path / "Trip I" / "x.jpg").parent.mkdir()
    (tmp_path / "Trip I" / "x.jpg").write_bytes(b"\xff\xd8x")  # what [Italy] would match
    run({
        "Folder": (ExpandInputs([str(trip)]), refs(trip, "a.jpg", "b*.jpg", "why?.jpg")),
        "File": (ExpandInputs([str(trip / "why?.jpg")]), refs(trip, "why?.jpg")),
        "Star": (ExpandInputs([str(trip / "b*.jpg")]), refs(trip, "b*.jpg")),
        # A pattern that names nothing that exists stays a pattern.
        "Pattern": (ExpandInputs([f"{tmp_path}/Trip [I]/*.jpg"]), refs(tmp_path, "Trip I/x.jpg")),
    })

"""The diff of two model lists: added, removed, changed, reordered, unchanged, and its line."""

from __future__ import annotations

from ollama_preloader.config.changes import describe_parameters, diff_models
from ollama_preloader.config.modelspec import ModelSpec, parse_model_list


def specs(raw: str) -> tuple[ModelSpec, ...]:
    return parse_model_list(raw).specs


def names(items: tuple[ModelSpec, ...]) -> list[str]:
    return [s.display for s in items]


def test_identical_lists_change_nothing() -> None:
    """Same entries: empty, and the line says so with the count."""
    d = diff_models(specs("devstral,llama3.2"), specs("devstral,llama3.2"))
    assert d.empty
    assert names(d.unchanged) == ["devstral:latest", "llama3.2:latest"]
    assert d.summary() == "no change to the model set (2 models)"


def test_respelling_is_not_a_change() -> None:
    """`devstral` -> `library/devstral:latest` is the same model with the same request."""
    d = diff_models(specs("devstral"), specs("library/devstral:latest"))
    assert d.empty
    assert d.unchanged[0].name == "library/devstral:latest"  # the new spelling is kept


def test_added_and_removed() -> None:
    """New names are added, missing ones removed; removed keep the old list's order."""
    d = diff_models(specs("a,b,c"), specs("b,d"))
    assert names(d.added) == ["d:latest"]
    assert names(d.removed) == ["a:latest", "c:latest"]
    assert names(d.unchanged) == ["b:latest"]
    assert not d.reordered  # b is alone: its relative order cannot change
    assert not d.empty
    assert d.summary() == "added d:latest; removed a:latest, c:latest; 1 unchanged"
    assert d.fields() == {
        "added": ["d:latest"],
        "removed": ["a:latest", "c:latest"],
        "changed": [],
        "pull_changed": [],
        "reordered": False,
        "models": 2,
    }


def test_insecure_changes_the_pull_not_the_load() -> None:
    """`?insecure=true` added: no reload (unchanged), but a pull change the event names."""
    d = diff_models(specs("a,b"), specs("a?insecure=true,b"))
    assert d.changed == ()
    assert names(d.unchanged) == ["a:latest", "b:latest"]
    assert [c.new.display for c in d.pull_changed] == ["a:latest"]
    assert not d.empty
    assert d.summary() == "pull settings of a:latest (insecure=true, was defaults); 2 unchanged"
    assert d.fields()["pull_changed"] == ["a:latest"]


def test_changed_options_keep_alive_and_kind() -> None:
    """Another keep_alive, runner option or kind is a change (the load request differs)."""
    old = specs("a?num_ctx=4096,b,c,d?kind=embedding&use_mmap=true")
    new = specs("a?num_ctx=8192,b?keep_alive=1h,c,d?use_mmap=true")
    d = diff_models(old, new)
    assert [c.new.display for c in d.changed] == ["a:latest", "b:latest", "d:latest"]
    assert names(d.unchanged) == ["c:latest"]
    assert [c.describe() for c in d.changed] == [
        "a:latest (num_ctx=8192, was num_ctx=4096)",
        "b:latest (keep_alive=1h, was defaults)",
        "d:latest (use_mmap=true, was use_mmap=true kind=embedding)",
    ]
    assert d.changed[0].old.options_dict() == {"num_ctx": 4096}


def test_equivalent_keep_alive_is_not_a_change() -> None:
    """`keep_alive=-1` and no keep_alive, or 3600 and 1h, send the same request."""
    d = diff_models(specs("a?keep_alive=3600,b"), specs("a?keep_alive=1h,b?keep_alive=-1"))
    assert d.empty


def test_reordered_is_about_the_models_in_both() -> None:
    """Swapping two kept models reorders; inserting one ahead only shifts priorities."""
    swapped = diff_models(specs("a,b,c"), specs("b,a,c"))
    assert swapped.reordered
    assert not swapped.empty
    assert swapped.summary() == "new order b:latest, a:latest, c:latest; 3 unchanged"
    shifted = diff_models(specs("a,b"), specs("z,a,b"))
    assert not shifted.reordered
    assert names(shifted.added) == ["z:latest"]


def test_everything_at_once_in_one_line() -> None:
    """The line lists each kind of change once, in a fixed order."""
    d = diff_models(specs("a,b?num_ctx=2048,c,gone"), specs("c,b?num_ctx=4096,a,new"))
    assert d.summary() == (
        "added new:latest; removed gone:latest; "
        "changed b:latest (num_ctx=4096, was num_ctx=2048); "
        "new order c:latest, b:latest, a:latest, new:latest; 2 unchanged"
    )


def test_from_nothing_and_to_nothing() -> None:
    """An empty list before or after: all added, or all removed."""
    assert names(diff_models((), specs("a,b")).added) == ["a:latest", "b:latest"]
    d = diff_models(specs("a"), ())
    assert names(d.removed) == ["a:latest"]
    assert d.summary() == "removed a:latest"


def test_describe_parameters() -> None:
    """A bare name is `defaults`; finite keep_alive, options and kind are shown."""
    (plain, full) = specs("a,b?keep_alive=90&num_gpu=0&use_mmap=false&kind=completion")
    assert describe_parameters(plain) == "defaults"
    assert describe_parameters(full) == "keep_alive=1m30s num_gpu=0 use_mmap=false kind=completion"

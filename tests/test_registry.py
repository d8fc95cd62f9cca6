"""hetsearch.utils.registry.Registry: one registry type behind every pluggable family."""

from __future__ import annotations

import pytest

from hetsearch.errors import ConfigError
from hetsearch.utils.registry import Registry


def _registry() -> Registry:
    return Registry("widget", "model.widget", hint="(see docs)")


def test_register_list_describe_and_look_up():
    widgets = _registry()

    @widgets.register("b")
    def b():
        """The b widget.

        More text that `hetsearch list` does not show."""

    widgets.add("a", object(), description="The a widget.")
    assert widgets.names() == ["a", "b"] and len(widgets) == 2 and "a" in widgets
    assert widgets.describe("b") == "The b widget." and widgets["b"] is b
    assert widgets.members() == [("a", "The a widget."), ("b", "The b widget.")]


def test_an_unknown_name_is_one_config_error_line_naming_the_choices():
    widgets = _registry()
    widgets.add("a", object(), description="A.")
    with pytest.raises(ConfigError) as caught:
        widgets.check("z")
    assert str(caught.value) == "model.widget: unknown widget 'z'; known: a (see docs)"


def test_a_second_entry_under_one_name_and_a_member_without_description_are_refused():
    widgets = _registry()
    entry = object()
    widgets.add("a", entry, description="A.")
    widgets.add("a", entry, description="A.")  # the same object again (a module imported twice): allowed
    with pytest.raises(ValueError, match="registered twice"):
        widgets.add("a", object(), description="A.")
    with pytest.raises(ValueError, match="one-line description"):
        widgets.add("b", lambda: None)


def test_a_declared_member_is_known_before_its_module_registers_it():
    widgets = _registry()
    widgets.declare("lazy", "some.module", "The declared line.")
    widgets.check("lazy")
    assert widgets.names() == ["lazy"] and "lazy" in widgets and widgets.describe("lazy") == "The declared line."
    with pytest.raises(LookupError, match="registered by some.module, which is not imported yet"):
        widgets.get("lazy")

    def lazy():
        """Its own docstring."""

    widgets.add("lazy", lazy)  # what importing some.module does
    assert widgets["lazy"] is lazy
    assert widgets.describe("lazy") == "The declared line."  # the same line before and after the import
    with pytest.raises(ValueError, match="declared twice"):
        widgets.declare("lazy", "elsewhere", "Again.")


def test_temporary_members_are_gone_after_the_block():
    widgets = _registry()
    with widgets.temporary():
        widgets.add("t", object(), description="T.")
        widgets.declare("d", "nowhere", "D.")
        assert widgets.names() == ["d", "t"]
    assert widgets.names() == []

"""jaxcrop.tables: the one markdown table writer, by hand."""
import pytest

from jaxcrop.tables import markdown_table


def test_header_rule_and_rows():
  assert markdown_table(["a", "b"], [[1, "x"], ["—", 0.5]]) == (
      "| a | b |\n|---|---|\n| 1 | x |\n| — | 0.5 |")
  assert markdown_table(["class", "F1"], [], align="lr") == "| class | F1 |\n|---|---:|"


def test_a_row_of_another_width_is_a_bug():
  with pytest.raises(ValueError, match="a markdown row of 1 cells under 2 columns"):
    markdown_table(["a", "b"], [["only"]])
  with pytest.raises(ValueError, match="align 'l' for 2 columns"):
    markdown_table(["a", "b"], [], align="l")

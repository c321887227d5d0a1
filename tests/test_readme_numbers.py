"""The README's measured numbers come from benchmarks/RESULTS.md's current tables: every
accuracy percentage and every time ratio (0.54×) it states is a cell of one of them."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
NUMBER = r"\d+(?:\.\d+)?"
# "98.61%", or a range "37.50–49.00%" whose ends both count.
PERCENT = re.compile(rf"({NUMBER})(?:[–-]({NUMBER}))?%")
RATIO = re.compile(rf"\b({NUMBER}\.\d+)×")


def table_cells(markdown):
    """The text of every table cell in `markdown` (rows are lines that start with "|")."""
    return {cell.strip().strip("`") for line in markdown.splitlines() if line.startswith("|")
            for cell in line.strip().strip("|").split("|")}


def stated(text):
    """The percentages ("98.61%") and ratios ("0.54×") that `text` states."""
    percents = {f"{n}%" for match in PERCENT.finditer(text) for n in match.groups() if n}
    return percents | {f"{match.group(1)}×" for match in RATIO.finditer(text)}


def in_results(number, cells):
    """Whether `number` is a cell of RESULTS.md, or starts one ("48.00% (1)")."""
    return any(cell == number or cell.startswith(number + " ") for cell in cells)


def test_every_number_in_the_readme_is_in_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cells = table_cells((ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8"))
    numbers = stated(readme)
    assert {"98.61%", "98.89%", "0.54×"} <= numbers  # the check sees what the README states
    assert sorted(n for n in numbers if not in_results(n, cells)) == []


def test_the_check_finds_numbers_that_are_not_in_the_tables():
    cells = table_cells("| model | accuracy | ratio |\n|---|---|---|\n| a | 48.00% | 0.54× |\n")
    text = "reaches 90.2% (or 37.50–48.00%), at 0.54× and 0.74× timm's time; 32×32 images"
    assert stated(text) == {"90.2%", "37.50%", "48.00%", "0.54×", "0.74×"}
    assert [n for n in sorted(stated(text)) if not in_results(n, cells)] == ["0.74×", "37.50%", "90.2%"]

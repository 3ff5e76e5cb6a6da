"""
Rewrite the limits tables of README.md and docs/protocol.md from their one
declaration, L{multirealm.config.Limits}:

    python tools/limits_table.py

tests/test_config.py fails while a table differs from the declaration.
"""

import os
import sys

import attrs

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from multirealm.config import Limits  # noqa: E402

DOCUMENTS = ("README.md", os.path.join("docs", "protocol.md"))
BEGIN = "<!-- limits table: made by tools/limits_table.py from multirealm/config.py -->"
END = "<!-- end of limits table -->"


def _number(value):
    return str(int(value)) if float(value).is_integer() else str(value)


def table():
    """The markdown table of every limit: key, default, bounds, meaning."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for field in attrs.fields(Limits):
        low, high = field.metadata["minimum"], field.metadata["maximum"]
        allowed = f"at least {_number(low)}" if high is None else (
            f"{_number(low)} to {_number(high)}")
        rows.append(
            f"| `{field.name}` | {_number(field.default)} | {allowed}"
            f" | {field.metadata['meaning']} |"
        )
    return "\n".join(rows)


def update(text):
    """C{text} with the table between its markers made anew."""
    before, begin, rest = text.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not (begin and end):
        raise ValueError(f"expected the lines {BEGIN} and {END}")
    return f"{before}{BEGIN}\n{table()}\n{END}{after}"


def main():
    for name in DOCUMENTS:
        path = os.path.join(os.path.dirname(HERE), name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = update(text)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"{name}: limits table rewritten")


if __name__ == "__main__":
    main()

"""What a recorded answer offers training, the same for SFT (training/export.py) and preference
data (training/preference.py)."""

from __future__ import annotations

# Outcomes the asker did not see as the model wrote them: withheld by the leak guard, replaced
# where citations are required or where no passage supported it, or stopped mid-answer. A vote on
# them says nothing of the text.
NOT_SHOWN = {"withheld", "uncited", "ungrounded", "stopped"}


def source_paths(record) -> list[str]:
    """The documents an answer is answered from: its cited sources, else its best passage."""
    paths = [s.get("path") for s in (record.sources or []) if isinstance(s, dict) and s.get("path")]
    if not paths:
        paths = [s.get("path") for s in (record.retrieved or [])[:1] if isinstance(s, dict) and s.get("path")]
    return sorted(set(paths))

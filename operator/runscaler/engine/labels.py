"""Whether GitHub kept a scale set's labels, and what to tell the user when it did not.

GitHub answers a PATCH of an existing scale set's labels with 200 and discards it, and a GitHub
Enterprise Server without a feature flag keeps only the name at creation: jobs that ask for the
other labels then stay queued with nothing in any log. The operator, `run --dry-run` and
`doctor` all compare what GitHub has with what the manifest wants, in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable

GHES_FLAG = "DistributedTask.AllowRunnerScaleSetCustomLabels"


def label_mismatch(wanted: Iterable[str], have: Iterable[str]) -> str | None:
    """One line saying how GitHub's labels differ from the manifest's, or None if they agree."""
    want = {label.lower() for label in wanted}
    got = {label.lower() for label in have}
    if want == got:
        return None
    return (
        f"GitHub has the labels {', '.join(sorted(got)) or '(none)'} but the manifest "
        f"wants {', '.join(sorted(want))}: jobs asking for the others stay queued. GitHub "
        "ignores label changes of an existing scale set (it must be re-created), and a "
        "GitHub Enterprise Server keeps only the name unless the feature flag "
        f"{GHES_FLAG} is on"
    )

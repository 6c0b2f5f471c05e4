"""Every row of `webhook/rules/profiles.py` is proven by a render of its own first release.

A row states what a range of KubeVirt releases renders; a row without a launcher rendered from
its first release's template code is where errors hide (issue 21 found v0.21 - v0.26 refused
for want of one). `tests/webhook/rules/test_kubevirt_renders.py` runs every render through the
rules; this checks that none of the rows goes without.
"""

from __future__ import annotations

import pytest

from tests.webhook.conftest import RENDERS
from webhook.rules import profiles


def rendered_releases() -> dict[profiles.Version, list[str]]:
    found: dict[profiles.Version, list[str]] = {}
    for path in RENDERS.glob("v*.yaml"):
        version = profiles.parse_version(path.name.split("-", 1)[0].removesuffix(".yaml"))
        assert version is not None, path.name
        found.setdefault(version, []).append(path.name)
    return found


@pytest.mark.parametrize("profile", profiles.PROFILES, ids=lambda p: p.name)
def test_each_profile_row_has_a_render_of_its_first_release(profile: profiles.Profile) -> None:
    releases = rendered_releases()
    # The first row holds everything before v0.7; its renders are of v0.6, the last of them.
    first = (0, 6) if profile.since == (0, 0) else profile.since
    assert releases.get(first), f"no render of v{first[0]}.{first[1]} for the {profile.name} row"


def test_every_render_is_judged_by_the_row_of_its_release() -> None:
    for version, names in rendered_releases().items():
        row = profiles.profile_for(version)
        assert row.since <= version, (names, row.name)

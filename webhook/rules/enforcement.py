"""What a denial by the rules becomes under `--enforcement`: refused (deny) or let through (warn).

A fail-closed guard is switched on in stages, as Pod Security's `warn`/`audit` modes, Kyverno's
`Audit` and Gatekeeper's `warn` action allow: `virtdev audit` first (what would be refused among
the launchers already running), then `warn` (every launcher admitted, each violation reported to
the client as a warning and to the audit log as an annotation), then `deny`.

Pure and applied after `validate_review`, by the HTTP layer and the offline CLI alike: the rules
never know the enforcement, so "what would be denied" is always one answer. Only a denial that
carries the rules' violations is softened; anything else (a skipped request, an allowed pod, a
denial without violations) passes through unchanged.
"""

from __future__ import annotations

from webhook.options import ENFORCEMENTS, Enforcement
from webhook.rules.answer import Answer, fit_warning

DENY: Enforcement = "deny"
WARN: Enforcement = "warn"
#: Warnings sent for one admission: the API server relays each to the client; a few say enough.
MAX_WARNINGS = 10
#: The API server keeps audit annotation values short; so does the denial's own annotation.
MAX_ANNOTATION = 1024


def enforce(answer: Answer, enforcement: Enforcement) -> Answer:
    """The answer /validate sends: `answer` itself, or under warn its denial made an allowance."""
    if enforcement == DENY or answer.allowed or not answer.violations:
        return answer
    if enforcement != WARN:  # settings are checked at start; this is a bug, not bad input
        raise ValueError(f"enforcement {enforcement!r}: one of {', '.join(ENFORCEMENTS)}")
    shown = answer.violations[:MAX_WARNINGS]
    warnings = [fit_warning(f"virtdev would deny: {violation}") for violation in shown]
    if len(answer.violations) > len(shown):
        warnings.append(f"virtdev would deny: and {len(answer.violations) - len(shown)} more")
    return Answer(
        allowed=True,
        verdict="warned",
        warnings=warnings,
        audit_annotations={
            **answer.audit_annotations,
            "enforcement": WARN,
            "would-deny": "; ".join(answer.violations)[:MAX_ANNOTATION],
        },
        violations=answer.violations,
        controls=answer.controls,
        profile=answer.profile,
        findings=answer.findings,
        other_requester=answer.other_requester,
    )

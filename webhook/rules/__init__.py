"""The rules: pure facts about KubeVirt releases and Pod Security, and the decisions made from them.

No I/O, no clock, no server, no cluster (`lint-imports` holds it): a pod's dict and the admin's
`policy.LauncherPolicy` in, a `launcher.Launcher` read once, a `mutation.Mutation`, the
`validation.Violation`s and an `answer.Answer` out. See docs/architecture.md.
"""

"""The simulated world: a seeded model of users over several surfaces (`simulator`), the closed
loop that plays its days against what the system serves (`closed_loop`), experiment arms
(`experiments`), the simulated event source (`source`) and an example log in the shape of a
user's own (`example_log`). It writes the event contract of `events/`; no library below the
orchestration layer imports it. Its rules are described in docs/simulated-world.md."""

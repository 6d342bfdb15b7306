"""How long each sandbox emulator takes to build a large account: the emulator tests build 100,000 contacts and
check them for what they are; the time it takes lives here, not in a timed unit test.

    .venv/bin/python benchmarks/emulator_scale.py [--contacts 100000] [--repeat 3]

Prints the best build time per provider over the repetitions (seconds) and the records built; exits 0.
"""

from __future__ import annotations

import argparse
import time

from integrations_pipeline.sandbox import EMULATORS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'provider':<12}{'contacts':>10}{'build s (best)':>16}")
    for provider, emulator_class in sorted(EMULATORS.items()):
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            emulator = emulator_class(client_id="bench", client_secret="bench-secret", contacts=args.contacts)
            timings.append(time.perf_counter() - started)
        print(f"{provider:<12}{len(emulator.contact_records()):>10}{min(timings):>16.2f}")


if __name__ == "__main__":
    main()

"""Schema-driven fuzzing of the HTTP API (Schemathesis, a dev dependency): requests generated from
``/openapi.json`` for every operation, both valid ones and ones that violate the schema (odd ids,
``k`` out of range or not a number, missing or non-file uploads), sent in-process to the ASGI app.
Used by ``tests/test_fuzz_api.py`` (no 5xx allowed) and ``bench/hardening.py`` (counts)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FuzzReport:
    sent: int = 0
    server_errors: int = 0
    by_status: dict = field(default_factory=dict)
    by_operation: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)   # (operation, status, body) of 5xx answers

    def to_dict(self) -> dict:
        return {"sent": self.sent, "server_errors": self.server_errors,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_operation": self.by_operation, "failures": self.failures[:20]}


def fuzz_app(app, *, examples: int = 40, modes: tuple[str, ...] = ("positive", "negative")) -> FuzzReport:
    """Send up to ``examples`` generated requests per operation and generation mode; derandomized
    (the same requests every run)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case):
                response = case.call()
                report.sent += 1
                key = f"{operation.label} [{mode}]"
                report.by_operation[key] = report.by_operation.get(key, 0) + 1
                report.by_status[response.status_code] = report.by_status.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    report.server_errors += 1
                    report.failures.append((operation.label, response.status_code, response.text[:300]))

            try:
                run()
            except Unsatisfiable:  # e.g. no invalid request exists for an operation without parameters
                continue
    return report

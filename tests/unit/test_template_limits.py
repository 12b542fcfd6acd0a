"""Templates come from API users: the sandbox refuses work that would tie up the server."""

from __future__ import annotations

import time

import pytest

from headless_ops.artifacts.templates import ConfigTemplate, RenderError


def _render(source: str) -> str:
    return ConfigTemplate("t", "text", source, None).render_text({"n": 3})


@pytest.mark.parametrize(
    "source",
    [
        "{{ 9**(9**9) }}",
        "{{ 'x' * 10**10 }}",
        "{{ [1] * 10**9 }}",
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% for i in range(90000) %}{% for j in range(90000) %}x{% endfor %}{% endfor %}",
        "{{ ''.__class__.__mro__ }}",
        "{{ missing }}",
    ],
)
def test_costly_or_unsafe_templates_are_refused_quickly(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderError):
        _render(source)
    assert time.monotonic() - started < 5  # a generous bound: refused before doing the work


def test_ordinary_arithmetic_loops_and_repetition_still_work() -> None:
    assert _render("{{ 2**10 }} {{ 'ab' * n }} {% for i in range(n) %}{{ i }}{% endfor %}") == (
        "1024 ababab 012"
    )

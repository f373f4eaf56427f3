"""The template sandbox holding against injection, autoescape (HTML escaped, text not), and
the starter set valid with an unsubscribe link: rendering, pure functions."""

from __future__ import annotations

import pytest

from services.outreach.starter import starter_templates
from services.outreach.templates.context import sample_context
from services.outreach.templates.rendering import TemplateProblem, render
from shared.settings import Settings


@pytest.mark.parametrize(
    "attack",
    [
        "{{ recipient.__class__.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ account.traits.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ lipsum.__globals__['os'].system('id') }}",
        "{{ self._TemplateReference__context }}",
        "{{ account.traits.update({'x': 1}) }}",
        "{% set x = account.traits.pop('a') %}",
        "{{ range(10**9)|list }}",
    ],
)
def test_template_injection_cannot_reach_python_internals(attack):
    ctx = sample_context(Settings(env="test"), {"account": {"traits": {"a": 1}}})
    with pytest.raises(TemplateProblem):
        render({"subject": "s", "text_body": attack, "html_body": ""}, ctx)


def test_html_is_autoescaped_and_text_is_not():
    ctx = sample_context(Settings(env="test"), {"account": {"name": "<script>alert(1)</script> & Co"}})
    out = render({"subject": "{{ account.name }}", "html_body": "<b>{{ account.name }}</b>", "text_body": "{{ account.name }}"}, ctx)
    assert out.html_body == "<b>&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</b>"
    assert out.text_body == out.subject == "<script>alert(1)</script> & Co"


def test_a_part_the_template_leaves_out_renders_empty():
    out = render({"subject": "Hi {{ account.name }}"}, sample_context(Settings(env="test"), {"account": {"name": "Acme"}}))
    assert (out.subject, out.html_body, out.text_body) == ("Hi Acme", "", "")


def test_the_starter_templates_are_valid_and_carry_an_unsubscribe_link():
    settings = Settings(env="test")
    templates = starter_templates()
    assert {"win-back", "onboarding-nudge", "usage-drop-check-in", "expansion-congrats"} <= set(templates)
    internal = {tid for tid, t in templates.items() if t.get("audience") == "internal"}
    assert internal == {"engagement-assigned", "engagement-reminder", "win-back-owner-brief"}
    for tid, t in templates.items():
        out = render({p: t[p] for p in ("subject", "html_body", "text_body")}, sample_context(settings, t.get("sample_context")))
        if tid in internal:  # notices and briefs to our own team, not customer mail
            continue
        assert "unsubscribe" in out.text_body.lower() and "unsubscribe" in out.html_body.lower(), tid
        assert 10 < len(out.subject) < 80, tid

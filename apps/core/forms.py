"""Shared pieces of console and portal forms."""

from django import forms


def secret_input(*, help_text: str, label: str | None = None, autocomplete: str = "new-password"):
    """A password or secret typed in a form: optional, never rendered back, not stripped
    (spaces may belong to it). The API's counterpart is ``apps.core.api.secret_field``."""
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": autocomplete}),
        help_text=help_text,
    )

"""Model fields for secrets kept under the KEK."""

from django.db import models


class EncryptedSecretField(models.TextField):
    """Holds a ``secrets.encrypt`` token, never a plaintext.

    The field is not editable (no form shows it) and values are set and read through the
    owning model's methods, which name the field as the encryption context. Every such
    field is found by ``rewrap_secrets`` through this class.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("editable", False)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        super().__init__(*args, **kwargs)


def secret_context(model: type[models.Model], field_name: str) -> str:
    """The authenticated context of a secret field: ``app_label.model.field``."""
    return f"{model._meta.label_lower}.{field_name}"

"""Re-encrypting every stored secret under the primary KEK."""

from dataclasses import dataclass, field

from django.apps import apps
from django.db import models, transaction

from apps.core import secrets
from apps.core.fields import EncryptedSecretField, secret_context

BATCH = 200


@dataclass
class RewrapReport:
    """How many secrets were rewrapped, per ``app_label.model.field``."""

    rewrapped: dict[str, int] = field(default_factory=dict)
    already_current: int = 0

    @property
    def total(self) -> int:
        return sum(self.rewrapped.values())


def secret_fields() -> list[tuple[type[models.Model], str]]:
    return [
        (model, f.name)
        for model in apps.get_models()
        for f in model._meta.concrete_fields
        if isinstance(f, EncryptedSecretField)
    ]


def rewrap_all() -> RewrapReport:
    """Rewrap every secret not under the primary key; safe to run again or concurrently."""
    report = RewrapReport()
    for model, name in secret_fields():
        context = secret_context(model, name)
        pks = list(model._default_manager.exclude(**{name: ""}).values_list("pk", flat=True))
        for start in range(0, len(pks), BATCH):
            with transaction.atomic():
                rows = model._default_manager.select_for_update().filter(
                    pk__in=pks[start : start + BATCH]
                )
                for pk, token in rows.values_list("pk", name):
                    if not token or not secrets.needs_rewrap(token):
                        report.already_current += 1
                        continue
                    new = secrets.rewrap(token, context=context)
                    model._default_manager.filter(pk=pk).update(**{name: new})
                    report.rewrapped[context] = report.rewrapped.get(context, 0) + 1
    return report

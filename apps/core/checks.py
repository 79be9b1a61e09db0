"""System checks that catch a bad configuration at start-up, not at first use."""

from django.conf import settings
from django.core.checks import Error, register

from apps.core.secrets import KEKConfigurationError, parse_kek


@register()
def kek_is_well_formed(app_configs, **kwargs) -> list[Error]:
    try:
        parse_kek(settings.MDMCERTS_KEK)
    except KEKConfigurationError as exc:
        return [
            Error(
                f"MDMCERTS_KEK is malformed: {exc}.", hint="See .env.example.", id="mdmcerts.E001"
            )
        ]
    return []

from django.apps import AppConfig
from django.db.models.signals import pre_delete


class CertificatesConfig(AppConfig):
    name = "apps.certificates"
    label = "certificates"
    verbose_name = "Certificates"

    def ready(self) -> None:
        # A receiver, not a service call: a device is deleted from the console (one or a
        # selection) or the shell, and its certificates lose their link to it (SET_NULL),
        # so only the moment before deletion sees which certificates were its.
        pre_delete.connect(
            _device_deleted, sender="devices.Device", dispatch_uid="certificates.device_deleted"
        )


def _device_deleted(sender, instance, **kwargs) -> None:
    from apps.certificates.choices import RevocationCause
    from apps.certificates.services import device_certificates_gone

    device_certificates_gone(device=instance, cause=RevocationCause.DELETED)

"""Who may revoke through the staff API."""

from apps.core.permissions import StaffModelPermissions


class CanRevokeCertificate(StaffModelPermissions):
    """A revocation (POST) changes a certificate: it needs view and change rights."""

    perms_map = {
        **StaffModelPermissions.perms_map,
        "POST": ["%(app_label)s.view_%(model_name)s", "%(app_label)s.change_%(model_name)s"],
    }

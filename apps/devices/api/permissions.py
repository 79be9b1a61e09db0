"""Who may act on devices and enrollment codes through the staff API."""

from apps.core.permissions import StaffModelPermissions


class CanChangeByPost(StaffModelPermissions):
    """An action by POST (scan, redeliver, unenroll, revoke) changes the object: it needs
    view and change rights, not add."""

    perms_map = {
        **StaffModelPermissions.perms_map,
        "POST": ["%(app_label)s.view_%(model_name)s", "%(app_label)s.change_%(model_name)s"],
    }

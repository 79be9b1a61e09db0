"""Staff API permissions: staff users with Django model permissions, reads included."""

from rest_framework.permissions import BasePermission, DjangoModelPermissions


def is_staff(user) -> bool:
    """A signed-in staff user (not the anonymous one)."""
    return bool(user and user.is_authenticated and user.is_staff)


class StaffModelPermissions(DjangoModelPermissions):
    """Staff only; GET needs ``view_<model>``, writes need add/change/delete."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view) -> bool:
        if not is_staff(request.user):
            return False
        return super().has_permission(request, view)


class StaffWithPerms(BasePermission):
    """Staff who hold every one of ``required_perms``, whatever the method (for actions
    whose rights are not the model's add/change/delete)."""

    required_perms: tuple[str, ...] = ()

    def has_permission(self, request, view) -> bool:
        return is_staff(request.user) and request.user.has_perms(self.required_perms)

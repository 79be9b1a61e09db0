"""Profiles (CRUD with nested payloads) and assignments (list, create, delete), versioned
and audited through ``profiles.services``."""

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets

from apps.profiles.api.serializers import (
    AssignmentFilterSerializer,
    ProfileAssignmentSerializer,
    ProfileSerializer,
)
from apps.profiles.models import Profile, ProfileAssignment, ProfilePayload
from apps.profiles.services import ProfileInUse, delete_profile, unassign


class ProfileInUseConflict(exceptions.APIException):
    """409: devices still hold the profile."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The profile is still on devices."
    default_code = "profile_in_use"


@extend_schema(tags=["Profiles"])
class ProfileViewSet(viewsets.ModelViewSet):
    """Profiles. Django model permissions of ``profiles.profile``; ``version`` is read-only
    and grows with every change."""

    serializer_class = ProfileSerializer

    def get_queryset(self) -> QuerySet[Profile]:
        payloads = ProfilePayload.objects.select_related("identity")
        return Profile.objects.prefetch_related(Prefetch("payloads", queryset=payloads))

    def perform_destroy(self, instance: Profile) -> None:
        try:
            delete_profile(profile=instance, request=self.request)
        except ProfileInUse as exc:
            raise ProfileInUseConflict(str(exc)) from exc


@extend_schema(tags=["Profiles"])
@extend_schema_view(list=extend_schema(parameters=[AssignmentFilterSerializer]))
class ProfileAssignmentViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Assignments of profiles to groups and devices: made and removed, never changed.
    Each one increments its profile's version. Model permissions of
    ``profiles.profileassignment``."""

    serializer_class = ProfileAssignmentSerializer
    queryset = ProfileAssignment.objects.order_by("id")

    def get_queryset(self) -> QuerySet[ProfileAssignment]:
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        params = AssignmentFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        return queryset.filter(**params.validated_data)

    def perform_destroy(self, instance: ProfileAssignment) -> None:
        unassign(assignment=instance, request=self.request)

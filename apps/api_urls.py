"""The staff REST API (/api/v1/): one router over every app's API views."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls

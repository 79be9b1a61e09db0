"""URLs, split by audience: console (admin), staff API, public device-facing views and the
end users' self-service portal."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.scep.urls import proxy_urlpatterns

urlpatterns = [
    # Devices call SCEP most, so it is matched first; no two prefixes overlap.
    path("scep/", include("apps.scep.urls")),
    path("scep-proxy/", include((proxy_urlpatterns, "scep_proxy"))),
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.api_urls")),
    path("api/device/v1/", include("apps.devices.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("pki/", include("apps.pki.urls")),
    path("portal/", include("apps.portal.urls")),
]

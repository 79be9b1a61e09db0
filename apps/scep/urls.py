from django.urls import path

from apps.scep.proxy import ScepProxyView
from apps.scep.views import ScepView

app_name = "scep"

urlpatterns = [
    path("<slug:slug>/", ScepView.as_view(), name="endpoint"),
    path("<slug:slug>/<path:suffix>", ScepView.as_view(), name="endpoint-suffix"),
]

# Included under its own prefix (/scep-proxy/): a token never competes with a template slug.
proxy_urlpatterns = [
    path("<str:token>/", ScepProxyView.as_view(), name="proxy"),
    path("<str:token>/<path:suffix>", ScepProxyView.as_view(), name="proxy-suffix"),
]

from django.urls import path

from apps.scep.views import ScepView

app_name = "scep"

urlpatterns = [
    path("<slug:slug>/", ScepView.as_view(), name="endpoint"),
    path("<slug:slug>/<path:suffix>", ScepView.as_view(), name="endpoint-suffix"),
]

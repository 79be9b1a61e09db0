from django.urls import path

from apps.pki import views

app_name = "pki"

urlpatterns = [
    path("<slug:slug>/ca.crt", views.ca_certificate, name="ca-certificate"),
]

from django.urls import path

from apps.pki import views

app_name = "pki"

urlpatterns = [
    path("<slug:slug>/ca.crt", views.ca_certificate, name="ca-certificate"),
    path("<slug:slug>/crl", views.crl_der, name="crl"),
    path("<slug:slug>/crl.pem", views.crl_pem, name="crl-pem"),
    path("<slug:slug>/ocsp", views.ocsp_post, name="ocsp"),
    path("<slug:slug>/ocsp/<path:encoded>", views.ocsp_get, name="ocsp-get"),
]

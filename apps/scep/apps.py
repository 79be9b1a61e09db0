from django.apps import AppConfig


class ScepConfig(AppConfig):
    name = "apps.scep"
    label = "scep"
    verbose_name = "SCEP"

from django.apps import AppConfig


class EnrollmentConfig(AppConfig):
    name = "apps.enrollment"
    label = "enrollment"
    verbose_name = "Enrollment"

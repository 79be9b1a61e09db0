"""The admin site wiring: mdmcerts uses its own AdminSite for the console dashboard."""

from django.contrib.admin.apps import AdminConfig


class MdmcertsAdminConfig(AdminConfig):
    default_site = "mdmcerts.admin_site.ConsoleAdminSite"

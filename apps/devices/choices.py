from django.db import models


class Platform(models.TextChoices):
    IOS = "ios", "iOS"
    IPADOS = "ipados", "iPadOS"
    MACOS = "macos", "macOS"
    ANDROID = "android", "Android"
    WINDOWS = "windows", "Windows"
    LINUX = "linux", "Linux"


class DeviceStatus(models.TextChoices):
    ENROLLED = "enrolled", "Enrolled"
    UNENROLLED = "unenrolled", "Unenrolled"
    WIPED = "wiped", "Wiped"
    RETIRED = "retired", "Deleted / retired"

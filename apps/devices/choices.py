from django.db import models


class Platform(models.TextChoices):
    IOS = "ios", "iOS"
    IPADOS = "ipados", "iPadOS"
    MACOS = "macos", "macOS"
    ANDROID = "android", "Android"
    WINDOWS = "windows", "Windows"
    LINUX = "linux", "Linux"


# Platforms that install Apple configuration profiles (.mobileconfig).
APPLE_PLATFORMS = frozenset({Platform.IOS, Platform.IPADOS, Platform.MACOS})


class DeviceStatus(models.TextChoices):
    ENROLLED = "enrolled", "Enrolled"
    UNENROLLED = "unenrolled", "Unenrolled"
    WIPED = "wiped", "Wiped"
    RETIRED = "retired", "Deleted / retired"

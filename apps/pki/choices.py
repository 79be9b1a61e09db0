from django.db import models


class CAKind(models.TextChoices):
    """How certificates of a CA server come to be (one issuer backend each)."""

    LOCAL = "local", "Local CA (mdmcerts signs)"
    SCEP = "scep", "External SCEP CA (NDES, DigiCert ONE, EJBCA, any RFC 8894 CA)"
    SINGLE_FILE = "single_file", "Single file identity"


class ExternalChallengeType(models.TextChoices):
    """How mdmcerts gets the challenge password an external SCEP CA expects."""

    NONE = "none", "None"
    STATIC = "static", "Static"
    DYNAMIC = "dynamic", "Dynamic (NDES mscep_admin)"


class KeyAlgorithm(models.TextChoices):
    RSA_2048 = "rsa2048", "RSA 2048"
    RSA_3072 = "rsa3072", "RSA 3072"
    RSA_4096 = "rsa4096", "RSA 4096"
    EC_P256 = "ec-p256", "EC P-256"
    EC_P384 = "ec-p384", "EC P-384"


class SignatureHash(models.TextChoices):
    SHA256 = "sha256", "SHA-256"
    SHA384 = "sha384", "SHA-384"
    SHA512 = "sha512", "SHA-512"


class RevocationReason(models.TextChoices):
    """RFC 5280 CRLReason, by the names cryptography's ``ReasonFlags`` uses."""

    UNSPECIFIED = "unspecified", "Unspecified"
    KEY_COMPROMISE = "key_compromise", "Key compromise"
    CA_COMPROMISE = "ca_compromise", "CA compromise"
    AFFILIATION_CHANGED = "affiliation_changed", "Affiliation changed"
    SUPERSEDED = "superseded", "Superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation", "Cessation of operation"
    CERTIFICATE_HOLD = "certificate_hold", "Certificate hold"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn", "Privilege withdrawn"
    AA_COMPROMISE = "aa_compromise", "AA compromise"

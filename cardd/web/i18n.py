"""The self-care page's words in the languages the prompts have (sounds/catalogue.yaml: en, es, fr)."""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = {"en": "English", "es": "Español", "fr": "Français"}

TEXT: dict[str, dict[str, str]] = {
    "title": {"en": "My calling card", "es": "Mi tarjeta telefónica", "fr": "Ma carte téléphonique"},
    "sign_in": {"en": "Sign in", "es": "Entrar", "fr": "Se connecter"},
    "sign_out": {"en": "Sign out", "es": "Salir", "fr": "Se déconnecter"},
    "card_number": {"en": "Card number", "es": "Número de tarjeta", "fr": "Numéro de carte"},
    "pin": {"en": "PIN", "es": "PIN", "fr": "Code PIN"},
    "language": {"en": "Language", "es": "Idioma", "fr": "Langue"},
    "wrong": {
        "en": "Wrong card number or PIN.",
        "es": "Número de tarjeta o PIN incorrecto.",
        "fr": "Numéro de carte ou code PIN incorrect.",
    },
    "throttled": {
        "en": "Too many failed attempts. Try again later.",
        "es": "Demasiados intentos fallidos. Inténtelo más tarde.",
        "fr": "Trop de tentatives échouées. Réessayez plus tard.",
    },
    "balance": {"en": "Balance", "es": "Saldo", "fr": "Solde"},
    "available": {"en": "Available for calls", "es": "Disponible para llamadas", "fr": "Disponible pour les appels"},
    "calls": {"en": "My calls", "es": "Mis llamadas", "fr": "Mes appels"},
    "when": {"en": "Ended (UTC)", "es": "Fin (UTC)", "fr": "Fin (UTC)"},
    "number_called": {"en": "Number called", "es": "Número marcado", "fr": "Numéro appelé"},
    "seconds": {"en": "Seconds", "es": "Segundos", "fr": "Secondes"},
    "cost": {"en": "Cost", "es": "Coste", "fr": "Coût"},
    "no_calls": {"en": "No calls yet.", "es": "Aún no hay llamadas.", "fr": "Aucun appel pour l'instant."},
    "older": {"en": "Older calls", "es": "Llamadas anteriores", "fr": "Appels plus anciens"},
    "topup": {"en": "Top up with a voucher", "es": "Recargar con un cupón", "fr": "Recharger avec un bon"},
    "voucher": {"en": "Voucher number", "es": "Número de cupón", "fr": "Numéro du bon"},
    "topup_button": {"en": "Top up", "es": "Recargar", "fr": "Recharger"},
    "topped_up": {
        "en": "Added {amount}. Your balance is now {balance}.",
        "es": "Se añadieron {amount}. Su saldo es ahora {balance}.",
        "fr": "{amount} ajoutés. Votre solde est maintenant {balance}.",
    },
    "voucher_refused": {
        "en": "This voucher cannot be used for this card.",
        "es": "Este cupón no se puede usar con esta tarjeta.",
        "fr": "Ce bon ne peut pas être utilisé pour cette carte.",
    },
    "topup_throttled": {
        "en": "Too many failed top-ups. Try again later.",
        "es": "Demasiadas recargas fallidas. Inténtelo más tarde.",
        "fr": "Trop de recharges échouées. Réessayez plus tard.",
    },
    "change_pin": {"en": "Change my PIN", "es": "Cambiar mi PIN", "fr": "Changer mon code PIN"},
    "current_pin": {"en": "Current PIN", "es": "PIN actual", "fr": "Code PIN actuel"},
    "new_pin": {"en": "New PIN (digits)", "es": "PIN nuevo (dígitos)", "fr": "Nouveau code PIN (chiffres)"},
    "repeat_pin": {"en": "New PIN again", "es": "Repita el PIN nuevo", "fr": "Nouveau code PIN encore"},
    "pin_changed": {
        "en": "Your PIN was changed.",
        "es": "Su PIN se ha cambiado.",
        "fr": "Votre code PIN a été changé.",
    },
    "pin_mismatch": {
        "en": "The new PINs differ, or are not 4 to 12 digits.",
        "es": "Los PIN nuevos no coinciden o no tienen de 4 a 12 dígitos.",
        "fr": "Les nouveaux codes PIN diffèrent ou n'ont pas 4 à 12 chiffres.",
    },
    "caller_ids": {
        "en": "Phones that call without a PIN",
        "es": "Teléfonos que llaman sin PIN",
        "fr": "Téléphones qui appellent sans code PIN",
    },
    "no_caller_ids": {"en": "None registered.", "es": "Ninguno registrado.", "fr": "Aucun enregistré."},
    "expired": {
        "en": "Your session ended; please sign in again.",
        "es": "Su sesión terminó; vuelva a entrar.",
        "fr": "Votre session est terminée ; reconnectez-vous.",
    },
}


def choose(asked: str | None, accept: str | None) -> str:
    """The language asked for (?lang=), else the browser's first known one, else English."""
    if asked in LANGUAGES:
        return asked
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def translator(lang: str) -> Callable[..., str]:
    def t(key: str, **values: str) -> str:
        text = TEXT[key].get(lang) or TEXT[key]["en"]
        return text.format(**values) if values else text

    return t

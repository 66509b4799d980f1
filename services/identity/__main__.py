from services.identity.app import create_app
from services.identity.settings import IdentitySettings
from shared.service import serve

settings = IdentitySettings()
serve(create_app(settings), settings.identity_url, settings.host)

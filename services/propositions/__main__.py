from services.propositions.app import create_app
from shared.service import serve
from shared.settings import Settings

settings = Settings()
serve(create_app(settings), settings.propositions_url, settings.host)

from services.journey.app import create_app
from services.journey.settings import JourneySettings
from shared.service import serve

settings = JourneySettings()
serve(create_app(settings), settings.journey_url, settings.host)

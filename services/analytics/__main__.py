from services.analytics.app import create_app
from services.analytics.settings import AnalyticsSettings
from shared.service import serve

settings = AnalyticsSettings()
serve(create_app(settings), settings.analytics_url, settings.host)

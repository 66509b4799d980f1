from services.notifications.app import create_app
from shared.service import serve
from shared.settings import Settings

settings = Settings()
serve(create_app(settings), settings.notifications_url)

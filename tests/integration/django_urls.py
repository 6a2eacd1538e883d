"""The URLconf of the Django project test_dkron_clients.py configures: django-dkron's routes under /dkron/.

Imported by Django itself once its settings are configured (its views need them), never at collection.
"""

from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [path("dkron/", include("dkron.urls"))]

from django.urls import path

from billing import views

urlpatterns = [
    path("app/billing/", views.index, name="app-billing"),
    # Where Stripe sent customers back before the pages moved under /app/.
    path("billing/", views.old_index, name="billing"),
    path("billing/checkout/plan/<slug:slug>/", views.checkout_plan, name="billing-checkout-plan"),
    path(
        "billing/checkout/credits/<slug:pack>/",
        views.checkout_credits,
        name="billing-checkout-credits",
    ),
    path("billing/portal/", views.portal, name="billing-portal"),
    path("billing/stripe/webhook/", views.stripe_webhook, name="billing-stripe-webhook"),
]

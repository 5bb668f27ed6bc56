from django.urls import path

from accounts import pages, team, views

urlpatterns = [
    path("app/", pages.overview, name="app-overview"),
    path("app/keys/", pages.keys, name="app-keys"),
    path("app/keys/<int:key_id>/revoke/", pages.revoke_key, name="app-key-revoke"),
    path("app/settings/", pages.settings_page, name="app-settings"),
    path(
        "app/settings/webhooks/<int:delivery_id>/redeliver/",
        pages.redeliver_webhook,
        name="app-webhook-redeliver",
    ),
    path("app/team/", team.team, name="app-team"),
    path("app/team/invite/", team.invite, name="app-team-invite"),
    path("app/team/<int:membership_id>/", team.change_member, name="app-team-member"),
    path(
        "app/team/invitations/<int:invitation_id>/cancel/",
        team.cancel_invitation,
        name="app-team-invitation-cancel",
    ),
    path("accounts/invite/<str:token>/", team.accept, name="invitation"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/verify/", views.verify_email, name="verify-email"),
    path("accounts/verify/<str:token>/", views.confirm_email, name="verify-email-confirm"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("accounts/", views.account, name="account"),
    path("accounts/password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password/reset/sent/",
        views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/password/reset/done/",
        views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from accounts import abuse
from accounts.models import (
    ApiKey,
    FreeCreditClaim,
    Invitation,
    Membership,
    Organization,
    Strike,
    User,
)
from accounts.verification import email_digest
from billing import ledger
from billing.models import Plan
from sdplatform.admin_actions import ReadOnlyAdmin, ask


class GrantCreditsForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=10_000_000)
    note = forms.CharField(max_length=200, required=False)


class ChangePlanForm(forms.Form):
    plan = forms.ModelChoiceField(Plan.objects.order_by("priority"))


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined", "email_verified_at"]
    search_fields = ["email"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser"]}),
        ("Dates", {"fields": ["last_login", "date_joined", "email_verified_at"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


class StrikeInline(admin.TabularInline):
    """The organization's refused prompts, newest first; history, so nobody edits it."""

    model = Strike
    extra = 0
    readonly_fields = ("created_at", "api_key", "reason", "prompt")
    fields = readonly_fields
    ordering = ["-created_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class SuspendedFilter(admin.SimpleListFilter):
    title = "suspended"
    parameter_name = "suspended"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> QuerySet[Organization]:
        if self.value() == "yes":
            return queryset.filter(suspended_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(suspended_at__isnull=True)
        return queryset


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_filter = ["plan", SuspendedFilter]
    search_fields = ["slug", "name"]
    readonly_fields = ["webhook_secret", "strikes", "suspended_at", "suspension_reason"]
    inlines = [MembershipInline, StrikeInline]
    actions = [
        "grant_credits",
        "change_plan",
        "suspend",
        "lift_suspension",
        "rotate_webhook_secrets",
    ]
    list_display = ["slug", "name", "plan", "credit_balance", "strikes", "suspended", "created_at"]

    @admin.action(description="Grant credits…")
    def grant_credits(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> TemplateResponse | None:
        form, page = ask(request, queryset, GrantCreditsForm, "grant_credits", "Grant credits")
        if form is None:
            return page
        amount, note = form.cleaned_data["amount"], form.cleaned_data["note"]
        granted = 0
        for org in queryset:
            try:
                ledger.grant(
                    org,
                    amount,
                    f"admin:{org.pk}:{uuid.uuid4().hex}",
                    note=note or f"Granted by {request.user} in the admin",
                )
            except ledger.BalanceLimitExceeded as exc:
                self.message_user(request, f"Nothing granted to {org.slug}: {exc}.", messages.ERROR)
            else:
                granted += 1
        if granted:
            self.message_user(request, f"Granted {amount} credits to {granted} organization(s).")
        return None

    @admin.action(description="Change plan…")
    def change_plan(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> TemplateResponse | None:
        form, page = ask(request, queryset, ChangePlanForm, "change_plan", "Change plan")
        if form is None:
            return page
        plan = form.cleaned_data["plan"]
        moved = 0
        for org in queryset:
            try:
                ledger.change_plan(org, plan)
            except ledger.BalanceLimitExceeded as exc:
                # The plan and its grant are one transaction: the organization stays as it was.
                self.message_user(request, f"Plan unchanged for {org.slug}: {exc}.", messages.ERROR)
            else:
                moved += 1
        if moved:
            self.message_user(request, f"Put {moved} organization(s) on the {plan} plan.")
        return None

    @admin.display(boolean=True, ordering="suspended_at")
    def suspended(self, org: Organization) -> bool:
        return org.suspended_at is not None

    @admin.action(description="Suspend (every key answers 403)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for org in queryset:
            abuse.suspend(org, f"Suspended by {request.user} in the admin")
        self.message_user(request, f"Suspended {len(queryset)} organization(s).")

    @admin.action(description="Lift suspension (and reset strikes)")
    def lift_suspension(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for org in queryset:
            abuse.lift_suspension(org)
        self.message_user(request, f"Lifted the suspension of {len(queryset)} organization(s).")

    @admin.action(description="Rotate the webhook signing secret")
    def rotate_webhook_secrets(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> None:
        for org in queryset:
            org.rotate_webhook_secret()
        self.message_user(
            request, f"Rotated the webhook secret of {len(queryset)} organization(s)."
        )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "organization",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["prefix", "name", "organization__slug"]
    readonly_fields = ["prefix", "digest", "created_at", "last_used_at"]
    list_select_related = ["organization"]
    actions = ["revoke"]

    @admin.action(description="Revoke (the key stops working at once)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            key.revoke()
        self.message_user(request, f"Revoked {len(queryset)} key(s).")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "organization__slug"]
    list_select_related = ["user", "organization"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organization", "role", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role", "accepted_at"]
    search_fields = ["email", "organization__slug"]
    readonly_fields = ["token"]


@admin.register(FreeCreditClaim)
class FreeCreditClaimAdmin(admin.ModelAdmin):
    """Addresses that had free sign-up credits, as digests; deleting one grants them again."""

    list_display = ["email_digest", "created_at"]
    search_fields = ["email_digest"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[FreeCreditClaim], search_term: str
    ) -> tuple[QuerySet[FreeCreditClaim], bool]:
        # Staff search by the address itself; only its digest is stored.
        if "@" in search_term:
            return queryset.filter(email_digest=email_digest(search_term)), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Strike)
class StrikeAdmin(ReadOnlyAdmin):
    """Read-only: a strike is history; lifting a suspension resets the count, not the log."""

    list_display = ["created_at", "organization", "api_key", "reason"]
    list_select_related = ["organization", "api_key"]
    search_fields = ["organization__slug", "reason", "prompt"]
    date_hierarchy = "created_at"

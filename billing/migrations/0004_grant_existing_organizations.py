"""Give organizations that existed before the ledger their plan's credits for this month.

New organizations get them when created (billing/ledger.py). The key is the one
`ledger.monthly_key` writes, so the monthly task does not grant this month a second time.
"""

from django.db import migrations
from django.db.models import F
from django.utils import timezone


def grant_current_month(apps, schema_editor):
    Organization = apps.get_model("accounts", "Organization")
    CreditEntry = apps.get_model("billing", "CreditEntry")
    month = timezone.now().date()
    for org in Organization.objects.select_related("plan").order_by("pk"):
        amount = org.plan.monthly_credits
        key = f"monthly:{org.pk}:{org.plan.slug}:{month:%Y-%m}"
        if amount <= 0 or CreditEntry.objects.filter(key=key).exists():
            continue
        Organization.objects.filter(pk=org.pk).update(credit_balance=F("credit_balance") + amount)
        CreditEntry.objects.create(
            organization_id=org.pk,
            kind="grant",
            amount=amount,
            balance_after=org.credit_balance + amount,
            key=key,
            note=f"{org.plan.name} plan credits for {month:%Y-%m}",
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_credits_and_abuse"),
        ("billing", "0003_ledger_and_stripe"),
    ]

    operations = [migrations.RunPython(grant_current_month, migrations.RunPython.noop)]

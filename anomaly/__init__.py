"""The library behind the jobs: settings, the job runner, model storage, detectors, events and alerts.

The scheduled jobs and tools at the top of the checkout are thin; README's "Code map" shows what
lives where and how data flows through each job.
"""

"""The API's view of what storage returns about calls: a recording as `RecordingOut`, an
evaluation as `EvaluationOut`, an evaluation form as `FormOut`. Built here, at the boundary,
from the records of `storage.recordings` and `storage.evaluation_forms`."""

from __future__ import annotations

from schemas.evaluation_forms import FormOut
from schemas.recordings import EvaluationOut, RecordingOut
from storage.evaluation_forms import Form
from storage.recordings import Evaluation, Recording

_RECORDING_OUT = tuple(RecordingOut.model_fields)
_EVALUATION_OUT = tuple(EvaluationOut.model_fields)
_FORM_OUT = tuple(FormOut.model_fields)


def recording_out(recording: Recording) -> RecordingOut:
    return RecordingOut.model_validate({name: getattr(recording, name) for name in _RECORDING_OUT})


def evaluation_out(evaluation: Evaluation) -> EvaluationOut:
    return EvaluationOut.model_validate(
        {name: getattr(evaluation, name) for name in _EVALUATION_OUT})


def form_out(form: Form) -> FormOut:
    fields = {name: getattr(form, name) for name in _FORM_OUT}
    fields["criteria"] = [criterion._asdict() for criterion in form.criteria]
    return FormOut.model_validate(fields)

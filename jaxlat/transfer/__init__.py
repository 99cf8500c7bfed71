"""Cross-device: rank agreement between devices, a device-aware MEDN, and few-shot adaptation of
a proxy device's predictor (or latency table) to a new device from K measurements.

    from jaxlat import transfer

    transfer.monotonicity_matrix(transfer.settings_tables(df))          # Spearman per pair
    adapted = transfer.adapt(records_k, measured_k, [transfer.table_proxy(table, key="arch")])
    adapted.predict(records)

    cal = transfer.calibrate(predictor, measured_records, statistic="p10")   # to this machine
    cal.predict(records), cal.log_affine
"""

from ._adapt import METHODS as METHODS
from ._adapt import Adapted as Adapted
from ._adapt import Proxy as Proxy
from ._adapt import adapt as adapt
from ._adapt import few_shot_curve as few_shot_curve
from ._adapt import item_keys as item_keys
from ._adapt import network_features as network_features
from ._adapt import predictor_proxy as predictor_proxy
from ._adapt import recomposed as recomposed
from ._adapt import table_proxy as table_proxy
from ._calibration import LIGHT_OPS as LIGHT_OPS
from ._calibration import LOG_AFFINE_METHODS as LOG_AFFINE_METHODS
from ._calibration import Calibration as Calibration
from ._calibration import calibrate as calibrate
from ._calibration import log_affine_ms as log_affine_ms
from ._calibration import spanning_archs as spanning_archs
from ._device_medn import DeviceMEDN as DeviceMEDN
from ._device_medn import embedding_method as embedding_method
from ._device_medn import finetune_method as finetune_method
from ._device_medn import fit_device_medn as fit_device_medn
from ._monotonicity import config_table as config_table
from ._monotonicity import model_table as model_table
from ._monotonicity import monotonicity_matrix as monotonicity_matrix
from ._monotonicity import rank_agreement as rank_agreement
from ._monotonicity import rank_agreement_by_module as rank_agreement_by_module
from ._monotonicity import settings_tables as settings_tables

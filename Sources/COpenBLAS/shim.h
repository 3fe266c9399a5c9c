// cblas.h from Debian's libopenblas-dev declares openblas_set_num_threads,
// openblas_get_config and openblas_get_corename beside the CBLAS API.
#include <cblas.h>

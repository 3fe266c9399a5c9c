#include "CMPI.h"
#include <stdlib.h>

MPI_Comm CMPI_COMM_WORLD(void) { return MPI_COMM_WORLD; }
MPI_Comm CMPI_COMM_NULL(void) { return MPI_COMM_NULL; }
MPI_Datatype CMPI_FLOAT(void) { return MPI_FLOAT; }
MPI_Datatype CMPI_DOUBLE(void) { return MPI_DOUBLE; }
MPI_Datatype CMPI_INT64(void) { return MPI_INT64_T; }
MPI_Datatype CMPI_BYTE(void) { return MPI_BYTE; }
MPI_Op CMPI_SUM(void) { return MPI_SUM; }
MPI_Op CMPI_MAX(void) { return MPI_MAX; }
MPI_Op CMPI_MIN(void) { return MPI_MIN; }
MPI_Errhandler CMPI_ERRORS_RETURN(void) { return MPI_ERRORS_RETURN; }
int CMPI_THREAD_FUNNELED(void) { return MPI_THREAD_FUNNELED; }
int CMPI_SUCCESS(void) { return MPI_SUCCESS; }
int CMPI_UNDEFINED(void) { return MPI_UNDEFINED; }
int CMPI_MAX_ERROR_STRING(void) { return MPI_MAX_ERROR_STRING; }
void *CMPI_IN_PLACE(void) { return MPI_IN_PLACE; }

int CMPI_Waitall(int n, MPI_Request *requests, MPI_Datatype type, int *counts) {
    if (n <= 0) return MPI_SUCCESS;
    MPI_Status *st = malloc(sizeof(MPI_Status) * (size_t)n);
    if (!st) return MPI_ERR_NO_MEM;
    int rc = MPI_Waitall(n, requests, st);
    if (rc == MPI_SUCCESS && counts) {
        for (int i = 0; i < n && rc == MPI_SUCCESS; i++) rc = MPI_Get_count(&st[i], type, &counts[i]);
    }
    free(st);
    return rc;
}

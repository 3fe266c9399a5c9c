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
int CMPI_THREAD_MULTIPLE(void) { return MPI_THREAD_MULTIPLE; }
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

int CMPI_Split_shared(MPI_Comm comm, MPI_Comm *node) {
    return MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, node);
}

int CMPI_Shared_window(MPI_Comm node, MPI_Aint bytes, MPI_Win *win, float **bases) {
    float *mine = NULL;
    int rc = MPI_Win_allocate_shared(bytes, (int)sizeof(float), MPI_INFO_NULL, node, &mine, win);
    if (rc != MPI_SUCCESS) return rc;
    if ((rc = MPI_Win_set_errhandler(*win, MPI_ERRORS_RETURN)) != MPI_SUCCESS) return rc;
    int size = 0;
    if ((rc = MPI_Comm_size(node, &size)) != MPI_SUCCESS) return rc;
    for (int q = 0; q < size; q++) {
        MPI_Aint got = 0;
        int unit = 0;
        if ((rc = MPI_Win_shared_query(*win, q, &got, &unit, &bases[q])) != MPI_SUCCESS) return rc;
    }
    return MPI_Win_lock_all(MPI_MODE_NOCHECK, *win);
}

int CMPI_Win_sync(MPI_Win win) { return MPI_Win_sync(win); }

int CMPI_Iallreduce_float_sum(float *buffer, int count, MPI_Comm comm, MPI_Request *request) {
    return MPI_Iallreduce(MPI_IN_PLACE, buffer, count, MPI_FLOAT, MPI_SUM, comm, request);
}

int CMPI_Test(MPI_Request *request, int *done) { return MPI_Test(request, done, MPI_STATUS_IGNORE); }

int CMPI_Wait(MPI_Request *request) { return MPI_Wait(request, MPI_STATUS_IGNORE); }

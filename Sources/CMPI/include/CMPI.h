// CMPI: the parts of mpi.h that Swift cannot import (handle macros), as prefixed functions.
// Everything else (MPI_Init_thread, MPI_Allreduce, ...) is imported from mpi.h directly.
#ifndef CMPI_H
#define CMPI_H
#include <mpi.h>

MPI_Comm CMPI_COMM_WORLD(void);
MPI_Comm CMPI_COMM_NULL(void);
MPI_Datatype CMPI_FLOAT(void);
MPI_Datatype CMPI_DOUBLE(void);
MPI_Datatype CMPI_INT64(void);
MPI_Datatype CMPI_BYTE(void);
MPI_Op CMPI_SUM(void);
MPI_Op CMPI_MAX(void);
MPI_Op CMPI_MIN(void);
MPI_Errhandler CMPI_ERRORS_RETURN(void);
int CMPI_THREAD_FUNNELED(void);
int CMPI_THREAD_MULTIPLE(void);
int CMPI_SUCCESS(void);
int CMPI_UNDEFINED(void);
/// MPI_Error_string into a caller buffer of at least CMPI_MAX_ERROR_STRING() bytes.
int CMPI_MAX_ERROR_STRING(void);
void *CMPI_IN_PLACE(void);
/// MPI_Waitall over `n` requests; for receives, `counts` (n entries, or NULL) gets the number of
/// `type` elements that arrived in each (MPI_Get_count), so a short message is noticed.
int CMPI_Waitall(int n, MPI_Request *requests, MPI_Datatype type, int *counts);
/// The ranks of `comm` that share this rank's memory (MPI_Comm_split_type, MPI_COMM_TYPE_SHARED).
int CMPI_Split_shared(MPI_Comm comm, MPI_Comm *node);
/// A shared-memory window over `node` of `bytes` per rank (MPI_Win_allocate_shared), errors
/// returned, a passive epoch open on every rank (lock_all, no check); bases[q] (q < size of
/// node) is rank q's segment as this process maps it.
int CMPI_Shared_window(MPI_Comm node, MPI_Aint bytes, MPI_Win *win, float **bases);
/// MPI_Win_sync: makes this process's stores to the window visible, and others' to it.
int CMPI_Win_sync(MPI_Win win);
int CMPI_Iallreduce_float_sum(float *buffer, int count, MPI_Comm comm, MPI_Request *request);
int CMPI_Test(MPI_Request *request, int *done);
int CMPI_Wait(MPI_Request *request);
#endif
